"""Programs around the core: ipamd, the CNI plugin, introspection, metrics, ipamctl."""
