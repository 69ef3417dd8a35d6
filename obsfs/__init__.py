"""obsfs: a FUSE filesystem for Huawei OBS and S3-compatible object stores."""

__version__ = "0.1.0"
