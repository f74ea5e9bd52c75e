"""Relation judges behind one interface; see `base`."""

from rrnet.eval.judges.base import VERDICTS, Judge, JudgeQuery, JudgeResult

__all__ = ["VERDICTS", "Judge", "JudgeQuery", "JudgeResult"]
