"""Pulumi programs that build a cluster on AWS, GCP and Azure from one provider-neutral spec,
and the Automation API runner that applies them, one stack per cluster."""
