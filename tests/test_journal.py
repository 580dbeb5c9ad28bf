"""Call journals and possible charges, in process: what a backend saved is durable, scoped and replayed without
a call; a crash after an answer arrived costs nothing more; calls of unknown outcome hold budget as the policy
says; a partly billed failure is settled at what it cost."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from backends.errors import BackendUnavailable, OutcomeUnknown
from backends.journal import FileJournal, JournalRecord, MemoryJournal
from backends.openai import OpenAIEditBackend, Settings
from backends.standins import FakeOpenAIServer, FunctionBackend
from pipeline.errors import ConfigError
from pipeline.ledger import BudgetCap, Ledger
from pipeline.routing import load_policy
from pipeline.run import JournalStore, build_report, execute_job
from tests.backend_contract import make_request
from tests.test_execute import context, decision, make_job, scripted
from tests.test_ledger import dead_owner
from tests.test_openai_wire import GPT1_USAGE, ok_body

KEY = "sk-journal-TEST-0123456789"


# ---- the shared interface and the runner's store -------------------------------------------------------


def test_memory_and_file_journals_replace_by_slot_and_survive_a_reopen(tmp_path):
    a, b = JournalRecord("x.job", "0", {"id": 1}), JournalRecord("x.job", "1", {"id": 2}, body=b"\x00raw\xff")
    for journal in (MemoryJournal(), FileJournal(tmp_path / "j.json")):
        journal.save(a)
        journal.save(b)
        journal.save(JournalRecord("x.job", "0", {"id": 3}))  # same slot: replaced
        assert [r.data["id"] for r in journal.load("x.job")] == [2, 3] and journal.load("other") == []
        journal.drop(b)
        assert [r.key for r in journal.load()] == ["0"]
    journal.save(b)
    assert FileJournal(tmp_path / "j.json").load() == journal.load()  # bytes round-trip through the file


def test_store_scopes_records_to_job_backend_and_inputs_and_ignores_damaged_ones(tmp_path):
    store = JournalStore(tmp_path)
    with Ledger.in_dir(tmp_path) as ledger:
        ledger.claim("j1", "k1", "k1")
        first = ledger.reserve("j1", "api", Decimal("0.1"))
        second = ledger.reserve("j1", "ff", Decimal("0.1"))
        api = store.for_call(ledger, "j1", "k1", "api", first)
        api.started()
        api.save(JournalRecord("openai.response", body=b'{"data": []}'))
        store.for_call(ledger, "j1", "k1", "ff", second).save(JournalRecord("firefly.job", "0", {"job_id": "u"}))
        assert ledger.attempts("j1")[0]["call_started_at"] is not None  # durable mark before the call
        assert [r.body for r in store.for_call(ledger, "j1", "k1", "api", 99).load()] == [b'{"data": []}']
        assert store.for_call(ledger, "j1", "other inputs", "api", 99).load() == []
        assert store.for_call(ledger, "j1", "k1", "sdxl", 99).load() == []
        assert [(p.backend, p.attempt_ids) for p in store.pending("j1", "k1")] == [("ff", (second,)), ("api", (first,))]

        record = next(store.folder("j1").glob("*.rec"))
        record.write_bytes(record.read_bytes()[:-3])  # a body that no longer matches its header
        (store.folder("j1") / ".0a.rec.0123456789ab.tmp").write_bytes(b"")  # a killed writer's temp
        (tmp_path / "j1" / ".0.png.0123456789ab.tmp").write_bytes(b"half")
        assert len(store.pending("j1", "k1")) == 1
        assert store.tidy("j1") == 2 and not list((tmp_path / "j1").rglob("*.tmp"))
        store.clear("j1")
        assert store.pending("j1", "k1") == [] and not store.folder("j1").exists()


# ---- OpenAI: the raw answer journaled before decoding, replayed without a call -------------------------


def openai_ok() -> httpx.Response:
    return httpx.Response(200, json=ok_body(w=64, h=64))


def openai_backend(handler) -> tuple[OpenAIEditBackend, list[httpx.Request]]:
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return handler(request)

    client = httpx.Client(transport=httpx.MockTransport(record))
    return OpenAIEditBackend("openai", Settings(base_url="http://api.test/v1"), client=client), sent


def test_openai_keeps_the_raw_answer_before_decoding_and_a_rerun_sends_nothing(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    raw = openai_ok()
    backend, sent = openai_backend(lambda r: raw)
    journal = MemoryJournal()
    first = backend.edit(make_request(), journal=journal)
    (saved,) = journal.load("openai.response")
    assert saved.body == raw.content and KEY not in json.dumps(saved.to_json())  # the body as it came, no secret
    monkeypatch.delenv("OPENAI_API_KEY")  # a replay needs no key: nothing is sent
    again = backend.edit(make_request(), journal=journal)
    assert len(sent) == 1 and again.images == first.images and again.cost_usd == first.cost_usd
    assert again.extras["resumed"] is True and "resumed" not in first.extras


def test_an_answer_that_does_not_decode_is_dropped_and_billed_from_its_usage(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    answers = [openai_ok(), httpx.Response(200, json={"data": [{"b64_json": "%%"}], "usage": GPT1_USAGE})]
    backend, _ = openai_backend(lambda r: answers.pop(0))
    billed = backend.edit(make_request()).cost_usd  # what GPT1_USAGE costs
    journal = MemoryJournal()
    with pytest.raises(BackendUnavailable, match="not a decodable image|not valid base64") as info:
        backend.edit(make_request(), journal=journal)
    assert journal.load() == [] and info.value.spent_usd == billed > 0


def test_an_answer_whose_second_image_does_not_decode_when_refitted_is_billed_from_its_usage(monkeypatch):
    """`size: auto` answered at the API's own bucket is refitted to the input's size after decoding: an image
    that breaks there was billed all the same, so the error says what it cost (never settled as free)."""
    import base64

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    broken = ok_body(n=2)  # 1024x1024: refitted to the 64x64 input
    broken["data"] = [broken["data"][0], {"b64_json": base64.b64encode(b"not an image").decode()}]
    answers = [openai_ok(), httpx.Response(200, json=broken)]
    backend, _ = openai_backend(lambda r: answers.pop(0))
    billed = backend.edit(make_request()).cost_usd  # what GPT1_USAGE costs
    journal = MemoryJournal()
    with pytest.raises(BackendUnavailable, match="does not decode") as info:
        backend.edit(make_request(n=2), journal=journal)
    assert journal.load() == [] and info.value.spent_usd == billed > 0


def test_killed_after_the_answer_arrived_the_rerun_finishes_from_the_journal(tmp_path, monkeypatch):
    """In process: the run 'dies' while writing outputs (after the answer was journaled); a new run (another
    ledger owner) finishes the job from the journal: one request, one bill, no possible charge left."""
    import pipeline.run.execute as execute

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer() as srv:
        api = OpenAIEditBackend("api", Settings(base_url=srv.base_url, model="gpt-image-2"))
        ctx = context(tmp_path, api)
        job = make_job(tmp_path / "in")

        def crash(folder, files):
            raise SystemExit("killed while writing outputs")

        monkeypatch.setattr(execute, "write_files", crash)
        ctx.ledger = Ledger.in_dir(tmp_path / "out", owner=dead_owner())
        with pytest.raises(SystemExit):
            execute_job(job, decision(job), ctx)
        monkeypatch.undo()
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        ctx.ledger = Ledger.in_dir(tmp_path / "out")
        assert ctx.ledger.recover_orphans().possible_charges == 1  # the call's answer is not known to the ledger
        out = execute_job(job, decision(job), ctx)
    assert out.status == "done" and len(srv.requests) == 1 and out.cost == srv.requests[0].billed_usd
    (attempt,) = ctx.ledger.attempts("j1")  # the original call, settled: no second hold, no second bill
    assert attempt["state"] == "settled" and attempt["outcome"] is None
    report = build_report(ctx.ledger)
    assert report["unknown_outcome"]["calls"] == 0 and Decimal(report["spend_usd"]) == out.cost
    assert not (tmp_path / "out" / "j1" / ".journal").exists()  # done: nothing left to resume


# ---- possible charges ----------------------------------------------------------------------------------


def test_outcome_unknown_keeps_the_hold_and_the_budget_counts_it(tmp_path):
    flaky = FunctionBackend(name="api", cost_per_image=Decimal("0.04"), handler=scripted(OutcomeUnknown("lost")))
    cap = BudgetCap("api", "day", usd=Decimal("0.10"))
    ctx = context(tmp_path, flaky, caps=[cap])
    first, second = make_job(tmp_path / "in", "j1"), make_job(tmp_path / "in", "j2", prompt="other")
    assert execute_job(first, decision(first, usd="0.04"), ctx).status == "failed"
    assert execute_job(first, decision(first, usd="0.04"), ctx).status == "skipped"  # failed; not retried
    assert ctx.ledger.spent("api", "day") == Decimal("0.04")  # the lost call may have been billed
    assert execute_job(second, decision(second, usd="0.04"), ctx).status == "done"
    third = make_job(tmp_path / "in", "j3", prompt="third")
    refused = execute_job(third, decision(third, usd="0.04"), ctx)  # 0.04 possible + 0.04 + 0.04 > 0.10
    assert refused.status == "failed" and refused.error_class == "BudgetExceeded"
    assert build_report(ctx.ledger)["unknown_outcome"] == {"calls": 1, "up_to_usd": "0.04"}


def test_a_partly_billed_failure_is_settled_at_what_it_cost(tmp_path):
    half = BackendUnavailable("second call failed", spent_usd=Decimal("0.02"))
    api = FunctionBackend(name="api", cost_per_image=Decimal("0.02"), handler=scripted(half))
    ctx = context(tmp_path, api)
    job = make_job(tmp_path / "in", n=2)
    assert execute_job(job, decision(job), ctx).status == "failed"
    assert ctx.ledger.get("j1").cost == Decimal("0.02") and ctx.ledger.total_spent() == Decimal("0.02")


def test_unknown_outcome_hold_lasts_as_the_policy_says(tmp_path):
    ghost = dead_owner()
    with Ledger.in_dir(tmp_path, owner=ghost) as crashed:
        for job in ("a", "b"):
            crashed.claim(job, job, job)
            crashed.call_started(crashed.reserve(job, "api", Decimal("0.5")))
    with Ledger.in_dir(tmp_path) as ledger:
        ledger.unknown_outcome_hold_s = 24 * 3600
        assert ledger.recover_orphans().possible_charges == 2
        assert ledger.spent("api", "day") == Decimal("1.0")
        ledger._conn().execute("UPDATE attempts SET hold_until=1 WHERE job_id='a'")  # its 24 hours are over
        ledger.claim("c", "c", "c")
        ledger.reserve("c", "api", Decimal("0.1"))  # a reservation drops expired possible charges first
        assert ledger.spent("api", "day") == Decimal("0.6")
        assert "unknown_outcome_hold passed" in ledger.attempts("a")[0]["error"]
        # until_period_end (no hold_until): it counts in its own day and month, not in the next ones
        assert ledger.spent("api", "day", datetime(2999, 1, 1, tzinfo=UTC)) == 0


def test_policy_unknown_outcome_hold_is_checked(tmp_path):
    base = "backends:\n  api: {kind: function}\nquality: {api: 0.8}\n"
    body = base + "unknown_outcome_hold: VALUE\n"
    (tmp_path / "p.yaml").write_text(body.replace("VALUE", "24h"))
    assert load_policy(tmp_path / "p.yaml").unknown_outcome_hold_s == 86400
    (tmp_path / "p.yaml").write_text(base)
    assert load_policy(tmp_path / "p.yaml").unknown_outcome_hold_s is None  # until_period_end
    (tmp_path / "p.yaml").write_text(body.replace("VALUE", "tomorrow"))
    with pytest.raises(ConfigError, match=r"unknown_outcome_hold.*90m, 24h or 7d"):
        load_policy(tmp_path / "p.yaml")


def test_a_try_the_backend_retried_after_no_answer_is_held_as_a_possible_charge(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer(script=["drop"]) as srv:  # the first request gets no answer; the retry succeeds
        api = OpenAIEditBackend("api", Settings(base_url=srv.base_url, model="gpt-image-2", max_retries=1))
        api._sleep = lambda s: None
        ctx = context(tmp_path, api)
        job = make_job(tmp_path / "in")
        out = execute_job(job, decision(job, usd="0.05"), ctx)
    assert out.status == "done" and len(srv.requests) == 2
    report = build_report(ctx.ledger)
    assert report["unknown_outcome"] == {"calls": 1, "up_to_usd": "0.05"}  # the dropped try may have been billed
    assert Decimal(report["spend_usd"]) == out.cost


def test_firefly_through_the_runner_resumes_its_submitted_job_and_bills_it_once(tmp_path, monkeypatch):
    """The runner's journal is Firefly's: a job still running at the poll timeout fails this run (billed: it was
    submitted) and keeps its ref; a plain rerun polls it to the end, submits nothing, bills nothing more."""
    from backends.adobe.backend import FireflyEditBackend
    from backends.adobe.backend import Settings as FireflySettings
    from backends.standins.firefly_server import FakeFireflyServer

    monkeypatch.setenv("FIREFLY_SERVICES_CLIENT_ID", "ff-journal-client")
    monkeypatch.setenv("FIREFLY_SERVICES_CLIENT_SECRET", "ff-journal-SECRET-1234")
    with FakeFireflyServer(client_id="ff-journal-client", client_secret="ff-journal-SECRET-1234") as ff:
        settings = FireflySettings(
            base_url=ff.base_url,
            token_url=ff.token_url,
            poll_interval_s=0.01,
            max_poll_interval_s=0.01,
            poll_timeout_s=0.3,
            price_per_operation_usd=Decimal("0.06"),
            requests_per_minute=None,  # (Firefly's default 4/min would space the two runs' calls 15 s apart)
        )
        firefly = FireflyEditBackend("firefly", settings)
        ctx = context(tmp_path, firefly)
        job = make_job(tmp_path / "in")
        ff.polls_to_finish = 10**9  # still running when this run gives up polling
        first = execute_job(job, decision(job, backend="firefly", usd="0.06"), ctx)
        assert first.status == "failed" and len(ff.submits()) == 1
        assert ctx.ledger.get("j1").cost == Decimal("0.06")  # submitted: billed, settled as such
        ff.polls_to_finish = 1  # it has finished meanwhile
        again = execute_job(job, decision(job, backend="firefly", usd="0.06"), ctx)  # no --retry-failed
    assert again.status == "done" and len(ff.submits()) == 1 and again.result["extras"]["jobs"][0]["resumed"]
    assert ctx.ledger.total_spent() == Decimal("0.06") and len(ctx.ledger.attempts("j1")) == 1
