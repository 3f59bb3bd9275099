"""The step table is the one list of steps: the console script, the spark-submit files, the
library's step functions, the notebooks and the Airflow DAG's task arguments all agree with it.
No Spark: signatures, files and parsers only."""

import ast
import importlib.util
import inspect
import sys
from pathlib import Path

import pytest

from prizeflow import cli, notebook, pipeline
from prizeflow.jobs.common import build_parser
from prizeflow.steps import RUN, SCHEDULED, STEPS, cli_arguments

PROJECT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list(STEPS))
def test_each_step_function_takes_spark_config_and_exactly_its_options(name):
    """One signature for every step: (spark, config, **inputs), the inputs being the table's
    options by dest, with the table's defaults; a check, where there is one, takes the same
    inputs."""
    options = STEPS[name].all_options()
    signature = inspect.signature(pipeline.step_function(name))
    parameters = list(signature.parameters.values())
    assert [p.name for p in parameters[:2]] == ["spark", "config"]
    assert [p.name for p in parameters[2:]] == [o.dest for o in options]
    for parameter, option in zip(parameters[2:], options):
        if option.required:
            assert parameter.default is inspect.Parameter.empty, option.flag
        else:
            assert parameter.default == option.default, option.flag
    for check in (pipeline.precheck(name), pipeline.answer(name)):
        if check is not None:
            assert list(inspect.signature(check).parameters)[1:] == [o.dest for o in options]


def test_the_spark_submit_files_are_the_steps_and_each_runs_its_own():
    files = {path.stem: path for path in (PROJECT / "jobs").glob("*.py")}
    assert set(files) == set(STEPS)
    for name, path in files.items():
        calls = [node for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "run_job"]
        assert [call.args[0].value for call in calls] == [name], path


def test_the_console_script_lists_every_step_and_parses_its_options(capsys):
    assert cli.main(["--help"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()
              if line.startswith("  ")]
    assert listed == list(STEPS)
    args = build_parser("register").parse_args(["--run-id", "abc", "--conf", "x.yaml"])
    assert (args.run_id, args.pipeline_run, args.conf) == ("abc", None, "x.yaml")
    args = build_parser("run").parse_args(["--source", "corpus", "--format", "movielens"])
    assert (args.source, args.fmt) == ("corpus", "movielens")
    with pytest.raises(SystemExit):
        build_parser("ingest").parse_args(["--source", "c", "--format", "nonsense"])


def test_register_refuses_two_ways_of_choosing_the_run(config):
    from prizeflow.errors import JobError

    with pytest.raises(JobError, match="--run-id and --pipeline-run"):
        pipeline.check_register(config, run_id="a", pipeline_run="b")


def test_the_notebooks_run_scheduled_steps_with_their_own_inputs():
    """Each notebook's `notebook.run_step(step, spark, config, **inputs)` names a scheduled step
    and only inputs that step takes."""
    seen = []
    for path in sorted((PROJECT / "notebooks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "run_step"):
                step = node.args[0].value
                dests = {o.dest for o in STEPS[step].all_options()}
                assert {k.arg for k in node.keywords} <= dests, (path.name, step)
                seen.append(step)
    assert seen == ["ingest", "train", "register"]
    assert set(seen) <= set(SCHEDULED)
    with pytest.raises(ValueError, match="unknown step 'generate'"):
        notebook.run_step("generate", None, None)


def test_run_is_the_run_steps_in_order_and_the_dag_schedules_the_rest():
    assert RUN == ("ingest", "train", "register")
    assert SCHEDULED[:3] == RUN and SCHEDULED[3:] == ("recommend",)


def test_the_dag_arguments_come_from_the_table_loaded_as_the_dag_loads_it():
    """The DAG reads lib/prizeflow/steps.py by its path (no prizeflow in Airflow's venv): loaded
    that way, the same dict gives each scheduled step the options its parser accepts."""
    spec = importlib.util.spec_from_file_location(
        "prizeflow_steps_by_path", PROJECT / "lib" / "prizeflow" / "steps.py")
    by_path = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = by_path
    try:
        spec.loader.exec_module(by_path)
    finally:
        del sys.modules[spec.name]
    inputs = {"source": "/data/corpus", "pipeline_run": "scheduled__1", "top": 7}
    expected = {"ingest": ["--source", "/data/corpus"],
                "train": ["--pipeline-run", "scheduled__1"],
                "register": ["--pipeline-run", "scheduled__1"],
                "recommend": ["--top", "7"]}
    for step in by_path.SCHEDULED:
        arguments = by_path.cli_arguments(step, inputs)
        assert arguments == cli_arguments(step, inputs) == expected[step]
        build_parser(step).parse_args(arguments)
    dag = (PROJECT / "dags" / "prizeflow_dag.py").read_text()
    assert "steps.cli_arguments(step," in dag and "for step in steps.SCHEDULED:" in dag


def test_predict_takes_one_request_and_somewhere_to_write_it(config):
    from prizeflow.errors import JobError

    args = build_parser("predict").parse_args(["--qualifying", "--out", "p.txt"])
    assert (args.qualifying, args.out, args.pairs, args.alias) == (True, "p.txt", None,
                                                                  "champion")
    assert build_parser("predict").parse_args(["--pairs", "t", "--out-table", "o"]).qualifying \
        is False
    assert cli_arguments("predict", {"qualifying": True, "out": "p.txt"}) == [
        "--qualifying", "--out", "p.txt"]
    assert cli_arguments("predict", {"qualifying": False, "pairs": "t"}) == ["--pairs", "t"]
    for inputs, message in (
            ({}, "exactly one of --qualifying and --pairs TABLE"),
            ({"qualifying": True, "pairs": "t", "out": "f"}, "exactly one of"),
            ({"pairs": "t", "out": "f"}, "--out FILE writes the Prize's format, for "
                                         "--qualifying only"),
            ({"qualifying": True}, "needs somewhere to write")):
        with pytest.raises(JobError, match=message):
            pipeline.check_predict(config, **inputs)
