"""Generated CSI v0.3 stubs; regenerate with scripts/gen-proto.sh, never edit by hand."""
