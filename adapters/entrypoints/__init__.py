"""The aws-node container's entrypoints: ``aws-vpc-cni-init`` (init container) and
``aws-vpc-cni`` (main container), as upstream's cmd/aws-vpc-cni-init and cmd/aws-vpc-cni."""
