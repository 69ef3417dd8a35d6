"""obsfs's Kubernetes CSI driver: a grpcio server in front of the obsfs filesystem.

The controller talks to the object store through ``obsfs.backend``; the node service drives
``obsfs mount`` processes and never imports the filesystem itself. Stubs for the CSI
protocol live in ``csi.v1`` and are generated from ``csi/proto/csi.proto``.
"""
