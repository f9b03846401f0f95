"""The yr operator: turns each YRInstance into a Pod and keeps its status true (kopf)."""
