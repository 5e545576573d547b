"""Test rigs: stand-ins for services the tests cannot get here, and the harnesses that run a
whole node locally. None of this ships (neither distribution includes ``tests``).

- ``localnode``: moto_server, the metadata server and vpc-ipamd as one local node (the demo,
  the end-to-end and crash tests); ``demo``: ``./dev demo`` on top of it.
- ``eni_hotplug``: the demo's EC2 hypervisor (a link appears when an ENI is attached);
  ``moto_addresses``: moto_server with EC2's rules for the addresses it gives ENIs.
- ``metadata_server``: instance metadata (IMDSv2) for a moto-backed instance.
- ``cni_runtime``: the plugin run as a container runtime would (directly or through libcni);
  ``fake_ipamd``: a scripted daemon for the plugin's tests.
- ``crashpoints``: the step hook that SIGKILLs the daemon at a named step, and the daemon
  entry point that installs it; ``reliability``: the crash campaign and its invariants.
- ``fake_apiserver`` (with ``apistore``, ``apidiscovery``, ``kube_rig``): a Kubernetes API
  server.
"""
