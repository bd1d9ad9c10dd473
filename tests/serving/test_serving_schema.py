"""Request parsing of the served recommender (no model): every bad request is one RequestError line."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from singer_rec.serving.model import SingerRecModel, model_config
from singer_rec.serving.schema import (RequestError, ServingError, input_example, parse_requests, response_frame,
                                       signature)


def parse(model_input, default_k=5, max_k=12, max_batch=4):
    return parse_requests(model_input, default_k, max_k, max_batch)


def test_records_columns_and_frames_parse_alike():
    frame = pd.DataFrame({"history": [["i0", "i1"], ["Widget number 2"]], "k": [3, None]})
    expected = [(["i0", "i1"], 3), (["Widget number 2"], 5)]
    for given in (frame, frame.to_dict("records"), {"history": [["i0", "i1"], ["Widget number 2"]], "k": [3, None]}):
        assert [(r.history, r.k) for r in parse(given)] == expected
    # a k column made float by a missing value, numpy arrays from MLflow's parsing, blank entries dropped
    assert [(r.history, r.k) for r in parse(pd.DataFrame({"history": [np.array(["i0", " "]), "i1"],
                                                          "k": [4.0, math.nan]}))] == [(["i0"], 4), (["i1"], 5)]


@pytest.mark.parametrize("model_input,message", [
    (pd.DataFrame({"history": [[]]}), "request 0: history is empty"),
    (pd.DataFrame({"history": [["i0"], ["  "]]}), "request 1: history is empty"),
    (pd.DataFrame({"history": [["i0"]], "k": ["abc"]}), "request 0: k must be a whole number from 1 to 12, got 'abc'"),
    (pd.DataFrame({"history": [["i0"]], "k": [2.5]}), "k must be a whole number from 1 to 12, got 2.5"),
    (pd.DataFrame({"history": [["i0"]], "k": [True]}), "k must be a whole number"),
    (pd.DataFrame({"history": [["i0"]], "k": [math.inf]}), "k must be a whole number"),
    (pd.DataFrame({"history": [["i0"]], "k": [13]}), "request 0: k=13 is out of range: use 1 to 12 (the beam width)"),
    (pd.DataFrame({"history": [["i0"]], "k": [0]}), "k=0 is out of range"),
    (pd.DataFrame({"history": [["i0"]] * 5}), "5 requests in one call: at most 4 (max_batch)"),
    (pd.DataFrame({"history": []}), "no requests"),
    (pd.DataFrame({"history": [[1534]]}), "history entries must be strings"),
    (pd.DataFrame({"history": [["i0"]], "user": ["u1"]}), "unknown field(s) ['user']"),
    (pd.DataFrame({"items": [["i0"]]}), "unknown field(s) ['items']; expected 'history' and optionally 'k'"),
    ([{"k": 3}], "request 0: no 'history'"),
    ("i0", "expected a table with a 'history' column"),
])
def test_bad_requests_are_one_line(model_input, message):
    with pytest.raises(RequestError) as caught:
        parse(model_input)
    assert message in caught.value.message and "\n" not in caught.value.message
    assert caught.value.get_http_status_code() == 400


def test_the_message_survives_the_scoring_servers_rewrite():
    """The scoring server sets ``message`` to a prefix that repeats the whole input over several lines."""
    error = RequestError("request 0: history is empty")
    error.message = "Failed to predict data '   history\n0  []'. \nError: " + error.message
    assert error.message == "request 0: history is empty"
    assert '"message": "request 0: history is empty"' in error.serialize_as_json()
    assert "stack_trace" not in error.serialize_as_json()
    assert ServingError("a\nb  c").message == "a b c"


def test_response_rows_and_signature():
    requests = parse(pd.DataFrame({"history": [["i0"], ["i1"]], "k": [2, 1]}))
    frame = response_frame(requests, [["i3", "i4", "i5"], ["i6", "i7", "i8"]], [[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]],
                           {"i3": "Three"}, {f"i{n}": f"<a_{n}>" for n in range(9)})
    assert frame.to_dict("records") == [
        {"request": 0, "rank": 1, "item_id": "i3", "title": "Three", "sid": "<a_3>", "score": -1.0},
        {"request": 0, "rank": 2, "item_id": "i4", "title": "", "sid": "<a_4>", "score": -2.0},
        {"request": 1, "rank": 1, "item_id": "i6", "title": "", "sid": "<a_6>", "score": -4.0}]
    sig = signature()
    assert sig.inputs.input_names() == ["history", "k"] and sig.outputs.input_names() == list(frame.columns)
    assert input_example(["a", "b", "c", "d"]).to_dict("records") == [{"history": ["a", "b", "c"], "k": 5}]


@pytest.mark.parametrize("overrides,message", [
    ({"beams": 3}, "unknown key(s) ['beams']"),
    ({"max_batch": 0}, "max_batch must be a positive integer"),
    ({"default_k": 30}, "default_k=30 exceeds num_beams=20"),
])
def test_model_config_is_checked(overrides, message):
    with pytest.raises(ValueError) as caught:
        model_config(overrides)
    assert message in str(caught.value)


def test_an_unexpected_failure_is_a_500_with_one_line(caplog):
    class Broken:
        titles, sid_map = {}, {}

        def resolve_items(self, history):
            return list(history)

        def recommend(self, *args, **kwargs):
            raise RuntimeError("out of memory\nwhile decoding")

    model = SingerRecModel()
    model.recommender, model.autocast = Broken(), None
    with pytest.raises(ServingError) as caught:
        model.predict(None, pd.DataFrame({"history": [["i0"]]}))
    assert caught.value.get_http_status_code() == 500
    assert caught.value.message == "internal error: RuntimeError: out of memory"
    assert "Traceback" in caplog.text  # the server's log keeps the traceback
