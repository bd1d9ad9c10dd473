"""``python -m singer_rec.training.rl --config FILE``: the RL training process."""
from singer_rec.training.rl.entry import main

if __name__ == "__main__":
    main()
