__version__ = "0.0.1"

import warnings
# fastai 2.8 calls torch.jit.script at import time, which torch >= 2.10 reports as deprecated on every import
warnings.filterwarnings('ignore', message=r'`torch.jit.script` is deprecated', category=FutureWarning)
