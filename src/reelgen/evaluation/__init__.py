"""Evaluation: the prompt-adherence oracle, temporal metrics, and the report runner (`run_eval`)."""
