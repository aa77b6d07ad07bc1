"""SQuAD v1.1 scorer: score_v1 in compute_score, the evaluate metric in squad.py."""
