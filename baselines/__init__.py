"""The baseline sequence mixers (LSTM, GRU, S4D, Transformer) behind the harness's
``Mixer`` interface; ``surnn.harness.registry.MIXERS`` names them. ``baselines.flops``
registers FLOP formulas (FFT, CPU attention) that torch's counter lacks."""
