"""The paper-reproduction harness, installed with ``pip install "adjinv[paper]"``.

Built on the library (``adjinv.core``, ``adjinv.encoders``, ``adjinv.lacs``,
``adjinv.methods``, ``adjinv.metrics``, ``adjinv.viz``) and never imported by it:
``data`` (datasets, spec strings, corruptions, composites), ``analysis`` (the paper's
statistics, pure tensors), ``heads`` (the linear probe and the hybrid attention head),
``baselines`` (Grad-CAM family, Guided Backprop, Mahendran & Vedaldi, UpConvNet) and
``runners`` (``adjinv experiment NAME``).
"""
