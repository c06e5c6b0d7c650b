"""`ServerLoad`: sequences a vLLM server could start, from its queue gauges (Prometheus text as vLLM writes it)."""

from __future__ import annotations

from rsbuild.captions.engines.server_load import ServerLoad


def gauges(running: int, waiting: int, engines: int = 1) -> str:
    lines = ["# HELP vllm:num_requests_running Number of requests in model execution batches.",
             "# TYPE vllm:num_requests_running gauge"]
    lines += [f'vllm:num_requests_running{{engine="{e}",model_name="m"}} {running / engines}' for e in range(engines)]
    lines += ["# TYPE vllm:num_requests_waiting gauge"]
    lines += [f'vllm:num_requests_waiting{{engine="{e}",model_name="m"}} {waiting / engines}' for e in range(engines)]
    return "\n".join(lines) + "\n"


def test_idle_sequences_are_unknown_until_the_server_was_once_full() -> None:
    load = ServerLoad()
    assert load.read(gauges(running=5, waiting=0)) and load.idle is None and load.batch == 0
    assert load.read(gauges(running=12, waiting=3)) and load.idle == 0 and load.batch == 12
    assert load.read(gauges(running=16, waiting=1)) and load.batch == 16  # the batch it cannot exceed
    assert load.read(gauges(running=9, waiting=0)) and load.idle == 7
    load.take(4)  # sent since that reading
    assert load.idle == 3
    load.take(10)
    assert load.idle == 0
    assert load.read(gauges(running=2, waiting=0)) and load.idle == 14  # the next reading is the truth again


def test_several_engines_of_one_server_add_up() -> None:
    load = ServerLoad()
    load.read(gauges(running=32, waiting=4, engines=2))
    load.read(gauges(running=10, waiting=0, engines=2))
    assert load.batch == 32 and load.idle == 22


def test_a_server_without_vllms_queue_gauges_is_not_read() -> None:
    load = ServerLoad()
    assert not load.read("")
    assert not load.read("# a llama.cpp server\nllamacpp:requests_processing 3\n")
    assert load.idle is None
