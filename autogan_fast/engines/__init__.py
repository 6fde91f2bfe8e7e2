"""The training engines behind `--engine eager|graph`: `eager` (the GAN steps, launched op by op; the
shared GAN and its dynamic reset), `graph` (the same steps over static buffers, replayed as captured
CUDA graphs) and `cuda_graphs` (the cache of captured graphs the graph engine replays).
"""
