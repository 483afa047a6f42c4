"""The README's main job: run the order-processing workflow from YAML on the embedded SQLite file.

python examples/quickstart.py [DB_URL]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from statemachine import Engine, load_yaml

sys.path.insert(0, str(Path(__file__).parent))
from actions import ShopActions

ROOT = Path(__file__).resolve().parent.parent


def main(url: str = "sqlite:///statemachine.db") -> int:
    engine = Engine(url)
    engine.register_actions(ShopActions())
    engine.register(load_yaml(ROOT / "definitions" / "order-processing.yaml"))
    engine.on(
        "workflow.step.completed",
        lambda ev: print(f"  step {ev['step']}: {json.dumps(ev['output'])}"),
    )
    order = {
        "order_id": "o-1001",
        "items": ["book", "pen"],
        "amount": 42.5,
        "email": "ada@example.com",
    }
    print(f"running order-processing on {url}")
    instance = engine.execute("order-processing", order)
    print(f"{instance.id}: {instance.status}")
    print(json.dumps(instance.output, indent=2))
    engine.close()
    return 0 if instance.status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
