"""Labelled folder → engine → clip scores → metrics | calibration → terminal (cli/) | HTML | config.

How well the vocabulary tags the user's own clips, and the thresholds that would make it tag
them better. One module per concern, each importing only those before it:

    labelled.py       a folder with one subfolder per tag → `Labelled` (embedded by the engine)
    metrics.py        pure numpy: ranking, top-k accuracy, PR curve, AP, given tags, confusions
    evaluation.py     prompt sets → `evaluate` → `Evaluation` (the figures `autotag eval` shows)
    calibration.py    per-tag thresholds for a target precision (from a labelled folder or
                      from reviews, with the library's gains and losses), the temperature
    config_editor.py  the comment-keeping edit of the config's `tagging:` section
    report.py         an `Evaluation` → one self-contained HTML page
    quantize.py       the user's own windows → NNCF's INT8 copy of the OpenVINO model, and the
                      report that accepts it against f32 (it decodes and scores, so it sits here)

The library computes and logs; `autotag/cli/evaluate.py` and `autotag/cli/calibrate.py` print.
This file imports nothing, so importing one module does not import the others.
"""
