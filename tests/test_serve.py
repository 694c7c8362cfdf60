"""Serve a trained model over HTTP (issue 18, item 4): a really started `python -m recbole_genair.serve`, a real client.

One SASRecGenAIR is trained per module on the tiny dataset, one server is started on it; each answer is compared
with `Recommender.recommend` on the same checkpoint in this process.
"""
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import DATASET, free_port, started_server, tiny_config, working_in
from recbole_genair import __version__
from recbole_genair.quick_start import run_recbole_genair
from recbole_genair.recommender import Recommender, RecommendError

MODEL = "SASRecGenAIR"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(checkpoint, Recommender) of one epoch of SASRecGenAIR on the tiny dataset."""
    folder = tmp_path_factory.mktemp("serve")
    with working_in(folder):
        checkpoint = run_recbole_genair(MODEL, config_dict=tiny_config(folder), saved=True)["saved_model_file"]
    return checkpoint, Recommender.load(checkpoint)


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    """An httpx client of the service started by the command on `trained`'s checkpoint; stopped after the module."""
    checkpoint, _ = trained
    with started_server([f"--checkpoint={checkpoint}"], tmp_path_factory.mktemp("server")) as client:
        yield client


def as_json(results):
    return [{"items": list(r.items), "scores": pytest.approx(list(r.scores), rel=1e-6, abs=1e-6),
             "skipped": list(r.skipped)} for r in results]


@pytest.mark.parametrize("k, exclude_seen, unknown", [(5, True, "error"), (60, False, "error"), (3, True, "skip")])
def test_recommend_answers_what_the_python_api_gives(server, trained, k, exclude_seen, unknown):
    _, recommender = trained
    histories = [["42", "46", "7", "42"], ["1"], list(recommender.item_ids[:25])]
    if unknown == "skip":
        histories[1] = ["nope", "1"]
    body = {"histories": histories, "k": k, "exclude_seen": exclude_seen, "unknown": unknown}
    answer = server.post("/recommend", json=body)
    assert answer.status_code == 200, answer.text
    expected = recommender.recommend(histories, k=k, exclude_seen=exclude_seen, unknown=unknown)
    assert answer.json() == {"recommendations": as_json(expected)}


def test_defaults_are_the_python_apis_and_numeric_ids_are_raw_ids(server, trained):
    _, recommender = trained
    answer = server.post("/recommend", json={"histories": [[42, 46], ["7"]]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"recommendations": as_json(recommender.recommend([["42", "46"], ["7"]]))}


def test_health(server):
    answer = server.get("/health")
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


def test_metadata_describes_the_served_checkpoint(server, trained):
    checkpoint, _ = trained
    assert server.get("/metadata").json() == {
        "model": MODEL, "dataset": DATASET, "n_items": 60, "max_history": 10,
        "checkpoint": str(checkpoint), "version": __version__,
    }


def test_openapi_documents_the_endpoints_and_the_request(server):
    spec = server.get("/openapi.json").json()
    assert set(spec["paths"]) == {"/recommend", "/items", "/items/{item_id}", "/health", "/metadata", "/metrics"}
    assert set(spec["paths"]["/items"]["post"]["responses"]) >= {"200", "400", "422"}
    assert set(spec["paths"]["/items/{item_id}"]["delete"]["responses"]) >= {"200", "403", "404", "409"}
    assert set(spec["paths"]["/recommend"]["post"]["responses"]) >= {"200", "400", "422"}
    request = spec["components"]["schemas"]["RecommendRequest"]
    assert set(request["properties"]) == {"histories", "k", "exclude_seen", "unknown"}
    assert request["required"] == ["histories"]
    assert server.get("/docs").status_code == 200


def library_message(recommender, body):
    """The `RecommendError` message of the same request to the Python API."""
    arguments = {"k": 10, "exclude_seen": True, "unknown": "error", **body}
    with pytest.raises(RecommendError) as err:
        recommender.recommend(arguments.pop("histories"), **arguments)
    return str(err.value)


@pytest.mark.parametrize("body, message", [
    ({"histories": [["42", "nope"], ["x", "46"]]}, r"2 item ids are not in the catalogue.*'nope'.*'x'"),
    ({"histories": [["a", "b"]], "unknown": "skip"}, r"history 0 has no item of the catalogue"),
    ({"histories": [["42"], []]}, r"history 1 is empty"),
    ({"histories": []}, r"no histories given"),
    ({"histories": [["42"]], "k": 61}, r"k=61 is larger than the 60 items"),
    ({"histories": [["42", "46"]], "k": 59}, r"k=59 is larger than the 58 items left for history 0"),
    ({"histories": [["42"]], "k": 0}, r"k=0: give a whole number of items"),
])
def test_a_request_the_model_cannot_answer_is_400_with_the_librarys_message(server, trained, body, message):
    _, recommender = trained
    answer = server.post("/recommend", json=body)
    assert answer.status_code == 400
    assert answer.json() == {"detail": library_message(recommender, body)}
    assert re.search(message, answer.json()["detail"])


@pytest.mark.parametrize("content, field", [
    ('{"histories": [["42"]], "k": 5', None),                       # not JSON
    ('{"k": 5}', "histories"),                                      # histories missing
    ('{"histories": "42,46"}', "histories"),                        # a string, not a batch
    ('{"histories": ["42", "46"]}', "histories"),                   # one history, not a batch
    ('{"histories": [["42", 4.5]]}', "histories"),                  # an id that is neither string nor integer
    ('{"histories": [["42"]], "k": "five"}', "k"),
    ('{"histories": [["42"]], "k": 2.5}', "k"),
    ('{"histories": [["42"]], "exclude_seen": "no"}', "exclude_seen"),
    ('{"histories": [["42"]], "unknown": "ignore"}', "unknown"),
    ('{"histories": [["42"]], "exlude_seen": false}', "exlude_seen"),  # a misspelled field is not ignored
    ('[["42"]]', None),
])
def test_a_malformed_body_is_422_naming_the_field(server, content, field):
    answer = server.post("/recommend", content=content, headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    problems = answer.json()["detail"]
    assert problems and all("msg" in p for p in problems)
    if field is not None:
        assert any(field in p["loc"] for p in problems), problems


def test_bad_requests_change_nothing_and_the_server_keeps_answering(server, trained):
    _, recommender = trained
    body = {"histories": [["42", "46"], ["7"]], "k": 4}
    before = server.post("/recommend", json=body).json()
    for bad in ({"histories": [["zz"]]}, {"histories": [[]]}, {"histories": [["42"]], "k": 1000}):
        assert server.post("/recommend", json=bad).status_code == 400
    assert server.post("/recommend", content=b"\xff\xfe", headers={"content-type": "application/json"}).status_code == 422
    assert server.get("/recommend").status_code == 405
    assert server.get("/nowhere").status_code == 404
    assert server.get("/health").json() == {"status": "ok"}
    assert server.post("/recommend", json=body).json() == before == {"recommendations": as_json(
        recommender.recommend(body["histories"], k=4))}


def test_concurrent_requests_each_get_their_own_answer(server, trained):
    _, recommender = trained
    ids = recommender.item_ids
    bodies = [{"histories": [[ids[n], ids[(3 * n + 1) % 60]]] * (1 + n % 3), "k": 1 + n % 7} for n in range(24)]
    bodies += [{"histories": [["unknown-id"]]}] * 4  # errors in between
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda body: server.post("/recommend", json=body), bodies))
    for body, answer in zip(bodies, answers):
        if body["histories"] == [["unknown-id"]]:
            assert answer.status_code == 400
        else:
            assert answer.json() == {"recommendations": as_json(recommender.recommend(body["histories"], k=body["k"]))}


def test_the_command_refuses_a_file_that_is_not_a_checkpoint_with_an_error_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "recbole_genair.serve", f"--checkpoint={tmp_path / 'missing.pth'}",
                           f"--port={free_port()}"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith("error: no checkpoint at ") and "Traceback" not in done.stderr


def test_adding_items_without_the_stored_basis_is_refused_with_the_fix(server):
    """The tiny dataset's .itememb was not written with a PCA basis: POST /items says how to get one; nothing changes."""
    n = server.get("/metadata").json()["n_items"]
    answer = server.post("/items", json={"items": [{"id": "n1", "fields": {"title": "Pen"}}]})
    # issue 34: 503, and the server's file paths stay in its log
    assert answer.status_code == 503 and "unavailable" in answer.json()["detail"] and "--itememb" in answer.json()["detail"]
    assert "/" not in answer.json()["detail"].replace("/items", "")
    assert server.get("/metadata").json()["n_items"] == n


def test_an_existing_added_checkpoint_is_not_replaced_unless_asked(tmp_path):
    """Issue 34: `serve --added_checkpoint=<an existing file>` overwrote it at the first POST /items."""
    from recbole_genair.commands.serve import main

    existing = tmp_path / "kept.pth"
    existing.write_bytes(b"kept")
    with pytest.raises(SystemExit, match=r"--added_checkpoint=.*kept.pth exists: give a new file, or --overwrite"):
        main([f"--checkpoint={tmp_path / 'model.pth'}", f"--added_checkpoint={existing}"])
    with pytest.raises(SystemExit, match="--added_checkpoint is the checkpoint read"):
        main([f"--checkpoint={existing}", f"--added_checkpoint={existing}", "--overwrite"])
    assert existing.read_bytes() == b"kept"


def test_a_model_without_a_text_path_answers_503_to_post_items(tmp_path):
    """Adding is a property of the service (its model), not of the request: 503, with the reason and no paths."""
    from fastapi.testclient import TestClient

    from recbole_genair.serving import create_app

    with working_in(tmp_path):
        checkpoint = run_recbole_genair("SASRec", config_dict=tiny_config(tmp_path), saved=True)["saved_model_file"]
    client = TestClient(create_app(Recommender.load(checkpoint)))
    answer = client.post("/items", json={"items": [{"id": "n1", "fields": {"title": "Pen"}}]})
    assert answer.status_code == 503 and "SASRec cannot add items from their text" in answer.json()["detail"]
    assert str(tmp_path) not in answer.json()["detail"]


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    """A TestClient of the app on a one-epoch SASRec, with small limits."""
    from fastapi.testclient import TestClient

    from recbole_genair.serving import create_app

    folder = tmp_path_factory.mktemp("limits")
    with working_in(folder):
        checkpoint = run_recbole_genair("SASRec", config_dict=tiny_config(folder), saved=True)["saved_model_file"]
    return TestClient(create_app(Recommender.load(checkpoint), max_body_bytes=2000, max_histories=3))


def test_a_body_above_the_limit_is_refused_before_it_is_read(limited):
    """Issue 34: a 9.7 MB body took 215 s and 3 GB; now 413 from the Content-Length, and the service goes on."""
    big = {"histories": [["1", "2", "3"]] * 400, "k": 5}
    answer = limited.post("/recommend", json=big)
    assert answer.status_code == 413 and "2000 bytes, --max_body_bytes" in answer.json()["detail"]
    assert limited.post("/recommend", json={"histories": [["1", "2"]], "k": 3}).status_code == 200


def test_too_many_histories_and_a_body_of_unknown_size_are_refused(limited):
    many = limited.post("/recommend", json={"histories": [["1"]] * 4, "k": 2})
    assert many.status_code == 413 and "at most 3 (--max_histories)" in many.json()["detail"]
    chunked = limited.post("/recommend", content=iter([b'{"histories": [["1"]], "k": 2}']),
                           headers={"content-type": "application/json"})
    assert chunked.status_code == 411 and "Content-Length" in chunked.json()["detail"]
    assert limited.post("/recommend", json={"histories": [["1"]] * 3, "k": 2}).status_code == 200


def test_an_api_key_from_the_environment_guards_every_endpoint_but_health(trained, tmp_path):
    """Issue 34: a really started server with RECBOLE_GENAIR_API_KEY set; the key is never a command-line flag."""
    checkpoint, recommender = trained
    body = {"histories": [["1", "2"]], "k": 3}
    with started_server([f"--checkpoint={checkpoint}"], tmp_path, env={"RECBOLE_GENAIR_API_KEY": "s3cret"}) as client:
        assert client.get("/health").status_code == 200
        for answer in (client.post("/recommend", json=body), client.get("/metadata"), client.get("/metrics"),
                       client.post("/recommend", json=body, headers={"Authorization": "Bearer wrong"}),
                       client.post("/recommend", json=body, headers={"Authorization": "s3cret"})):
            assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
            assert "Authorization: Bearer <key>" in answer.json()["detail"] and "s3cret" not in answer.text
        auth = {"Authorization": "Bearer s3cret"}
        answer = client.post("/recommend", json=body, headers=auth)
        assert answer.status_code == 200
        assert answer.json()["recommendations"] == as_json(recommender.recommend([["1", "2"]], k=3))
        metrics = client.get("/metrics", headers=auth).text
        assert 'recbole_genair_errors_total{endpoint="/recommend",method="POST",status="401"} 3.0' in metrics
    with pytest.raises(SystemExit, match="--api_key_file=.*nokey is empty: write the key on its first line"):
        (tmp_path / "nokey").write_text("\n")
        from recbole_genair.commands.serve import main

        main([f"--checkpoint={checkpoint}", f"--api_key_file={tmp_path / 'nokey'}"])
    assert "--api_key=" not in subprocess.run([sys.executable, "-m", "recbole_genair.serve", "--help"],
                                              capture_output=True, text=True).stdout


def test_a_key_for_writes_only_and_a_read_only_service(trained):
    from fastapi.testclient import TestClient

    from recbole_genair.serving import create_app

    _, recommender = trained
    item = {"items": [{"id": "n1", "fields": {"title": "Pen"}}]}
    client = TestClient(create_app(recommender, api_key="k1", api_key_scope="writes", read_only=True))
    assert client.post("/recommend", json={"histories": [["1"]], "k": 2}).status_code == 200  # reads: no key
    assert client.get("/metrics").status_code == 200
    assert client.post("/items", json=item).status_code == 401 and client.delete("/items/n1").status_code == 401
    for answer in (client.post("/items", json=item, headers={"Authorization": "Bearer k1"}),
                   client.delete("/items/n1", headers={"Authorization": "Bearer k1"})):
        assert answer.status_code == 403 and "read-only (--read_only)" in answer.json()["detail"]
    with pytest.raises(ValueError, match="api_key_scope must be one of all, writes"):
        create_app(recommender, api_key="k1", api_key_scope="reads")


def test_concurrent_one_history_requests_share_a_forward_pass_and_keep_their_own_answers(trained):
    """Issue 34: micro-batching. 24 threads at once; a 50 ms wait makes them meet; one unknown id fails alone."""
    from recbole_genair.serving import MicroBatcher

    _, recommender = trained
    batcher = MicroBatcher(recommender, max_wait_s=0.05)
    histories = [[str(1 + (n * 7) % 50), str(1 + (n * 3) % 50)] for n in range(23)] + [["1", "no-such-item"]]
    options = [(3 + n % 2, n % 3 != 0, "error") for n in range(24)]  # two k, both exclude_seen: several groups
    with ThreadPoolExecutor(24) as pool:
        futures = [pool.submit(batcher.recommend, h, *o) for h, o in zip(histories, options)]
    for history, (k, exclude_seen, unknown), future in zip(histories[:-1], options, futures):
        (alone,) = recommender.recommend([history], k=k, exclude_seen=exclude_seen, unknown=unknown)
        got = future.result()  # the same items; scores equal up to float rounding (a batched matrix product)
        assert got.items == alone.items and got.scores == pytest.approx(alone.scores, rel=1e-6, abs=1e-6)
    with pytest.raises(RecommendError, match="'no-such-item'"):
        futures[-1].result()
    assert max(batcher.batch_sizes) > 1 and sum(batcher.batch_sizes) == 24
