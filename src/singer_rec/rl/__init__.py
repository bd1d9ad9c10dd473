"""SINGER's SID-navigated RL: rewards (Eq. 6-9), the SID-prefix curriculum (Eq. 3-5) and GRPO (Eq. 1-2)."""
