"""AWS backends: EC2 over boto3 (CloudPort), IMDSv2 over urllib (MetadataPort), and a
metadata HTTP server that serves the IMDS view of a moto-backed instance."""
