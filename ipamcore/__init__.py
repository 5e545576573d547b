"""ipamcore: the side-effect-free IPAM core of a VPC CNI node agent."""
