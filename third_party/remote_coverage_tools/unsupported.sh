#!/bin/sh
echo "coverage is not supported in the offline hakmem build" >&2
exit 1
