"""A supervisor that reserves its team as a resource group from inside its pod (Kubernetes
end-to-end tests; pods import it from the repo)."""

from __future__ import annotations

import yr
from tests.k8s_instances import ONE_CPU, Worker


@yr.instance(invoke_options=ONE_CPU)
class GroupLead:
    def __init__(self, workers: int) -> None:
        self.group = yr.create_resource_group([{"CPU": 1000, "Memory": 128}] * workers)
        self.group.wait(120)
        self.workers = [
            Worker.options(
                yr.InvokeOptions(
                    cpu=1000,
                    memory=128,
                    resource_group_options=yr.ResourceGroupOptions(
                        self.group.resource_group_name, bundle_index=index
                    ),
                )
            ).invoke()
            for index in range(workers)
        ]

    def group_name(self) -> str:
        return self.group.resource_group_name

    def train(self, lr: float) -> list[str]:
        return yr.get([w.train.invoke(i, lr) for i, w in enumerate(self.workers)], timeout=120)
