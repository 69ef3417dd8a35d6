"""Generated CSI v1 stubs; regenerate with scripts/gen-proto.sh, never edit by hand."""
