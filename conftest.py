# Tests use tiny models, for which one thread is fastest; two busy OpenMP pools on a
# 2-core machine (pytest plus a training subprocess, or two DDP ranks) can slow each
# other down a hundredfold. Set before torch is imported so subprocesses inherit it.
import os

os.environ.setdefault('OMP_NUM_THREADS', '1')
