"""The EXAMPLES of multipath_flush run as written on the lab (they attach LUN 0 with iscsi_volume, flush its map
twice and detach it): the documentation is a playbook that works, not a sketch."""
import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]


def examples(module):
    text = (REPO / "plugins" / "modules" / ("%s.py" % module)).read_text()
    return yaml.safe_load(re.search(r'^EXAMPLES = r"""\n(.*?)^"""', text, re.M | re.S).group(1))


def test_multipath_flush_examples_run_as_written(lab, ansible_lab, tmp_path):
    tasks = examples("multipath_flush")
    assert not [t for t in tasks if "when" in t], "the examples must run, not be skipped"
    play = tmp_path / "examples.yml"
    play.write_text(json.dumps([{"name": "multipath_flush EXAMPLES", "hosts": "iscsi_lab", "gather_facts": False,
                                 "become": True, "tasks": tasks}]))
    r = ansible_lab.playbook(play)
    assert r.rc == 0, r.stdout[-6000:]
    m = re.search(r"^lab\s*:\s*ok=(\d+)\s+changed=(\d+)", r.stdout, re.M)
    assert m and int(m.group(1)) == len(tasks) and int(m.group(2)) == 3, r.stdout[-6000:]  # the 2nd flush: no change
    rc, out, _err = lab.ssh("ls /sys/class/iscsi_session | wc -l; ls /sys/block | grep -c '^dm-' || true")
    assert out.split() == ["0", "0"], out
