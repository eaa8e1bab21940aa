import os

# Quiet TensorFlow's C++ logs; keep XLA on the CPU with its default threading.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
