"""Networks and the model wrapper that the detection engine drives."""
