"""task2: one end-to-end neural CTR model (train, select on valid AUC, predict test)."""
