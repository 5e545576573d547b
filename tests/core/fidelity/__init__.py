"""Upstream's own test cases, translated case by case into tests of the core (issue 15).

Sources, all at upstream v1.23.1: ``pkg/ipamd/datastore/data_store_test.go``
(:mod:`.test_datastore`), the pool and warm-target tests of ``pkg/ipamd/ipamd_test.go``
(:mod:`.test_warm_pool`) and ``pkg/ipamd/datastore/secondary_eni_exclusion_focused_test.go``
(:mod:`.test_secondary_eni_exclusion`). Each test's docstring names the upstream test it
comes from; checks of a deliberate difference say "documented difference" and point to the
README's "Where this differs from upstream".

Upstream cases with no counterpart in the core, and why:

data_store_test.go
- TestPodIPv4Address(WithPDEnabled), the "checkpoint error" step: writing the checkpoint
  before acknowledging is the shell's job (``adapters/ipamd``), not the core's.
- TestDeleteENI / TestDelENIIPv4Address, removing an unknown ENI or address "is an error":
  the core takes whole snapshots (a set difference), so there is no call to get wrong.
- TestDataStore_normalizeCheckpointDataByPodVethExistence / validateAllocationByPodVeth-
  Existence, the veth and netlink lookups: the shell's (``restore(keep=...)``); the core's
  side, dropping what ``keep`` rejects, is translated.
- TestForceRemovalMetrics, the Prometheus counters: the daemon's; the core reports
  ``force_removed``, which is translated.

secondary_eni_exclusion_focused_test.go
- TestSecondaryENIExclusionFocused test 7-8 and TestSecondaryENIExclusionWithPods' last
  step, "an excluded ENI with no pods is deletable": the core has no "excluded for pod IPs
  but still ours" state. Its one exclusion of a secondary ENI is ``no_manage=true``, which
  upstream too leaves alone (never freed). Also, the tag is read when an ENI joins the pool.

ipamd_test.go
- TestNodeInit*, TestIPAMContext_setupENI*, TestIPAMContext_enableSecurityGroupsForPods,
  TestAnnotatePod, TestAddFeatureToCNINode, TestPodENIErrInc: start-up, datapath,
  Kubernetes and metrics, all in the shell.
- TestIncreaseIPPoolCustomENIOnNonSchedulableNode(Default): the node's Kubernetes taint
  (``AWS_MANAGE_ENIS_NON_SCHEDULABLE``) is not implemented.
- TestIncrease*SubnetDiscoveryUnfilledENI, the retry of the top-up with a single address
  before creating an ENI: the core goes straight to the new ENI (one call fewer).
- TestGetWarmENITarget, TestGetWarmPrefixTarget (except the unset default, translated),
  TestDisablingENIProvisioning, TestEnableImdsOnlyMode, TestPodENIConfigFlag: environment
  parsing, the daemon's (``adapters/ipamd/settings.py``, ``tests/adapters/test_settings.py``);
  DISABLE_ENI_PROVISIONING, ENABLE_IMDS_ONLY_MODE and ENABLE_POD_ENI are not implemented.
- TestNode{IP,Prefix}PoolReconcileBadIMDSData, the steps where metadata and EC2 disagree:
  the daemon reconciles from EC2's describe, so the core never sees the metadata view; the
  "no ENI found: abort" step is translated.
- TestIPAMContext_filterUnmanagedENIs(_disableManageUntaggedMode), except "Primary ENI
  unmanaged": ENIs tagged with another instance's id, and untagged ENIs when
  ``enableManageUntaggedMode`` is off, are not treated as unmanaged (the core manages every
  attached ENI not tagged ``no_manage=true``).
- TestIsConfigValid, "both v4 and v6 enabled" and the security-groups-for-pods rows: one
  address family per node, and no security groups for pods.
"""
