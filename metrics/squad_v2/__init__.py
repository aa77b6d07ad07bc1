"""SQuAD v2.0 scorer: score_v2 in compute_score, the evaluate metric in squad_v2.py."""
