"""Object-store access: one interface, one implementation over esdk-obs-python."""

from obsfs.backend.base import ListPage, ObjectInfo, ObjectStore, StoreConfig

__all__ = ["ListPage", "ObjectInfo", "ObjectStore", "StoreConfig"]
