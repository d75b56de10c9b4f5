"""Integration tests through real CNI clients (cnitool, podman), each node a namespace on the fabric.

`harness` holds the plain helpers, `conftest` the fixtures that create and always remove what a test
uses; `test_reference_clients` runs Debian's reference plugins through both clients and is the
template for the `calico` tests.
"""
