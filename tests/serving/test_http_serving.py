"""The registered pyfunc model behind `mlflow models serve` (a real server, on 127.0.0.1): the same items
as SidRecommender, and every bad request a 4xx with a one-line message. Also the model in-process."""
from __future__ import annotations

import os

import pandas as pd
import pytest

from served_model import CONFIG, log_tiny_model
from singer_rec.recommend import SidRecommender
from singer_rec.serving import server as server_tools
from singer_rec.serving.server import post

NAME = "tiny-singer"


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    folder, uri = log_tiny_model(root, NAME)
    return root, folder, uri


@pytest.fixture(scope="module")
def recommender(logged):
    return SidRecommender.from_folder(logged[1])


@pytest.fixture(scope="module")
def server(logged):
    root, _, uri = logged
    port = server_tools.free_port()
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_RUN_ID", None)
    log = root / "server.log"
    process = server_tools.start(f"models:/{NAME}/latest", port, log, env, host="127.0.0.1", cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        server_tools.wait_until_ready(process, url, log)
        yield url
    finally:
        server_tools.stop(process)


def expected_rows(recommender, history, k):
    items, scores = recommender.recommend([history], k=k, num_beams=CONFIG["num_beams"])
    return [(rank, item, recommender.titles[item]) for rank, item in enumerate(items[0], start=1)], scores[0]


def check_answer(rows, request, recommender, history, k):
    expected, scores = expected_rows(recommender, history, k)
    mine = [r for r in rows if r["request"] == request]
    assert [(r["rank"], r["item_id"], r["title"]) for r in mine] == expected
    assert [r["sid"] for r in mine] == [recommender.sid(item) for _, item, _ in expected]
    assert [r["score"] for r in mine] == pytest.approx(scores, abs=1e-3)


def test_served_items_equal_the_recommenders(server, recommender):
    body = {"dataframe_records": [{"history": ["i0", "i1"], "k": 3}, {"history": ["Widget number 2", "i5"]}]}
    status, answer = post(server, body)
    assert status == 200, answer
    rows = answer["predictions"]
    check_answer(rows, 0, recommender, ["i0", "i1"], 3)
    check_answer(rows, 1, recommender, ["i2", "i5"], CONFIG["default_k"])  # a title resolves to its item
    # the same request as MLflow's other table layout
    status, answer = post(server, {"dataframe_split": {"columns": ["history", "k"], "data": [[["i0", "i1"], 3]]}})
    assert status == 200, answer
    check_answer(answer["predictions"], 0, recommender, ["i0", "i1"], 3)


@pytest.mark.parametrize("body,message", [
    ({"dataframe_records": [{"history": ["i0", "zz-unknown"]}]}, "request 0: history: 'zz-unknown' is not a known"),
    ({"dataframe_records": [{"history": ["Widget nmber 3"]}]}, "(closest: 'Widget number 3'"),
    ({"dataframe_records": [{"history": ["Widget number 10"]}]}, "is the title of several items"),
    ({"dataframe_records": [{"history": ["i0"]}, {"history": []}]}, "request 1: history is empty"),
    ({"dataframe_records": [{"history": ["i0"], "k": "three"}]}, "request 0: k must be a whole number from 1 to 12"),
    ({"dataframe_records": [{"history": ["i0"], "k": 2.5}]}, "k must be a whole number from 1 to 12, got 2.5"),
    ({"dataframe_records": [{"history": ["i0"], "k": 13}]}, "k=13 is out of range: use 1 to 12 (the beam width)"),
    ({"dataframe_records": [{"history": ["i0"]}] * 5}, "5 requests in one call: at most 4 (max_batch)"),
])
def test_bad_requests_are_400_with_one_line(server, body, message):
    status, answer = post(server, body)
    assert status == 400, answer
    assert message in answer["message"] and "\n" not in answer["message"], answer["message"]
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE" and "stack_trace" not in answer


@pytest.mark.parametrize("body,message", [
    (b'{"dataframe_records": [{"history": ["i0"]}', "Ensure that input is a valid JSON formatted string"),
    ({"dataframe_records": [{"history": [1534]}]}, ""),  # not the signature's array of strings
    ({"dataframe_records": [{"items": ["i0"]}]}, ""),
])
def test_mlflows_own_checks_are_4xx_without_a_traceback(server, body, message):
    status, answer = post(server, body)
    assert 400 <= status < 500, answer
    assert message in answer["message"].partition("\n")[0]
    assert "Traceback" not in answer["message"] and "stack_trace" not in answer


def test_in_process_load_model(logged, recommender):
    import mlflow.pyfunc

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", logged[2])
        model = mlflow.pyfunc.load_model(f"models:/{NAME}/latest")
    assert model.metadata.get_input_schema().input_names() == ["history", "k"]
    frame = model.predict(pd.DataFrame({"history": [["i3", "i4"]], "k": [4]}))
    assert list(frame.columns) == ["request", "rank", "item_id", "title", "sid", "score"]
    check_answer(frame.to_dict("records"), 0, recommender, ["i3", "i4"], 4)
