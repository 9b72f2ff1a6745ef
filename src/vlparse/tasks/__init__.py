"""Tasks: pre-training and (later) fine-tuning recipes built from models, objectives and data."""
