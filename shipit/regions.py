"""What an AWS region name looks like: two letters, an optional partition qualifier
(`-gov`, `-iso`, `-isob`...), a direction and a number (`us-east-1`, `us-gov-west-1`,
`us-isob-east-1`). The one rule for the `aws_region` setting and for IAM's partitions."""

from __future__ import annotations

import re

# Group 1 is the partition qualifier, or None in the standard partition.
REGION = re.compile(r"[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]{1,2}")
