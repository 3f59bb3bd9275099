"""The human report `make demo` prints from a `prizeflow run` summary."""

import json

import pytest

from prizeflow.report import main, render

SUMMARY = {
    "command": "run", "model_name": "prizeflow-als", "version": 2, "alias": "champion",
    "test_rmse": 0.85, "champion_rmse_before": 0.9, "lift_pct": {"global_mean": 20.0, "bias": 5.5},
    "ingest": {"ratings": 200000, "quarantined": 0, "files_unchanged": 7, "files_ingested": 0,
               "lines_read": 0},
    "train": {"best_params": {"kind": "residual", "rank": 50}, "grid_points": 4,
              "split_method": "probe", "split_counts": {"test": 10, "train": 80, "validation": 10},
              "baselines": {"global_mean": 1.0625, "bias": 0.8995},
              "baselines_left_out": {"cinematch": "the test set holds 10 ratings where the "
                                                  "Netflix Prize's probe set holds 1,408,395"},
              "ranking": {"model": {"precision_at_10": 0.12, "recall_at_10": 0.3,
                                    "ndcg_at_10": 0.25, "users": 1200},
                          "popularity": {"precision_at_10": 0.05, "recall_at_10": 0.1,
                                         "ndcg_at_10": 0.08, "users": 1200}},
              "blend_weights": [0.0, 1.0, 1.0, 2.0], "test_rmse_without_history": 0.87,
              "test_rmse_als": 0.88},
}


def test_report_names_every_figure():
    text = render(SUMMARY, "sqlite:///mlflow.db")
    assert ("ratings in lake  : 200,000 (this run read 0 file(s), 0 lines, 0 quarantined; "
            "7 file(s) unchanged)") in text
    assert "rank=50" in text
    assert ("test RMSE        : 0.8500 (with each user's history; without one 0.8700, ALS part "
            "alone 0.8800)") in text
    assert "baseline bias    : RMSE 0.8995, lift +5.50%" in text
    assert ("baseline cinematch: no lift shown: the test set holds 10 ratings where the Netflix "
            "Prize's probe set holds 1,408,395") in text
    assert ("top-10 quality   : precision 0.1200, recall 0.3000, NDCG 0.2500; popularity "
            "precision 0.0500, recall 0.1000, NDCG 0.0800 (1,200 test users)") in text
    assert "version 2 as @champion (champion before: RMSE 0.9000)" in text
    assert "make ui TRACKING_URI=sqlite:///mlflow.db" in text
    assert "make serve TRACKING_URI=sqlite:///mlflow.db" in text


def test_report_reads_the_last_line_and_rejects_other_summaries(tmp_path, capsys):
    log = tmp_path / "run.log"
    log.write_text("some progress\n" + json.dumps(SUMMARY) + "\n")
    assert main([str(log)]) == 0
    assert "prizeflow-als version 2" in capsys.readouterr().out
    log.write_text(json.dumps({"command": "train"}) + "\n")
    with pytest.raises(SystemExit):
        main([str(log)])
