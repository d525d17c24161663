#!/bin/sh
echo "coverage is not collected through Bazel in alexnet_tf" >&2
exit 1
