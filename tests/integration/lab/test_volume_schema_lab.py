"""The roles' volume schema on the real-kernel lab: one IQN (and LUN) per portal, a volume without IQN found by
discovery with discovery CHAP, and volumes made by the filter brick.storage.iscsi_volume_args from os-brick shaped
connection properties; attached by brick.storage.attach and detached again by brick.storage.detach in one play
(the detach takes the IQN the discovery found from brick_attached).
"""
import json
import time

IQN = "iqn.2003-01.org.linux-iscsi.lab:target1"
P1, P2 = "127.0.0.1:3260", "127.0.0.2:3260"
DUSER, DSECRET = "disc-user", "DiscSecret-0123"

PLAY = [{
    "name": "Volume schema: iqns/luns per portal, discovery with discovery CHAP, volumes from the filter",
    "hosts": "iscsi_lab",
    "gather_facts": False,
    "become": True,
    "vars": {
        "os_brick_props": {
            "target_discovered": False, "target_portal": P1, "target_iqn": IQN, "target_lun": 0,
            "target_portals": [P1, P2], "target_iqns": [IQN, IQN], "target_luns": [0, 0],
            "volume_id": "7b3cd3f0", "auth_method": None, "encrypted": False},
        "ironic_props": {"target_portal": P1, "target_lun": 1, "discovery_auth_method": "CHAP",
                         "discovery_auth_username": DUSER, "discovery_auth_password": DSECRET},
    },
    "tasks": [
        {"name": "The volumes: one written out, two from the filter",
         "ansible.builtin.set_fact": {"brick_volumes": [
             {"name": "per-portal", "portals": [P1, P2], "iqns": [IQN, IQN], "luns": [0, 0],
              "multipath": "required"},
             "{{ ironic_props | brick.storage.iscsi_volume_args(format='role', name='discovered', multipath=False) }}",
         ]},
         "no_log": True},
        {"name": "Attach", "ansible.builtin.include_role": {"name": "brick.storage.attach"}},
        {"name": "Show", "ansible.builtin.debug": {
            "msg": "ATTACHED={{ brick_attached | to_json }}"}},
        {"name": "The multipath volume from os-brick's multipath form is the same volume",
         "vars": {"vol": "{{ os_brick_props | brick.storage.iscsi_volume_args(multipath=true) }}"},
         "brick.storage.iscsi_volume": {"portals": "{{ vol.portals }}", "iqn": "{{ vol.iqn }}", "lun": "{{ vol.lun }}",
                                        "multipath": "required"},
         "register": "again"},
        {"name": "Check", "ansible.builtin.assert": {"that": [
            "brick_attached['per-portal'].multipath",
            "brick_attached['per-portal'].portals | length == 2",
            "brick_attached['discovered'].iqns == ['" + IQN + "']",
            "brick_attached['discovered'].device is match('/dev/sd')",
            "again is not changed and again.device == brick_attached['per-portal'].device",
        ]}},
        {"name": "Detach (the discovered volume by the IQN its attach found)",
         "ansible.builtin.include_role": {"name": "brick.storage.detach"}},
    ],
}]


def guest(lab, cmd, timeout=180):
    for _attempt in range(4):
        rc, out, err = lab.ssh(cmd, timeout=timeout)
        if rc != 255:
            break
        time.sleep(5)
    assert rc == 0, "guest: %s\nrc=%s\n%s\n%s" % (cmd, rc, out, err)
    return out


def test_iqns_per_portal_discovery_chap_and_the_filter(lab, ansible_lab, tmp_path):
    # SendTargets discovery needs CHAP from now on (the session does not)
    lab.target("setup", "--discovery-chap", "%s:%s" % (DUSER, DSECRET))
    play = tmp_path / "schema.yml"
    play.write_text(json.dumps(PLAY))
    r = ansible_lab.playbook(play)
    assert r.rc == 0, r.stdout[-6000:]
    # the play's own assertions: a 2-path map for per-portal, the discovered IQN in brick_attached, the filter's
    # module arguments find the same volume attached
    assert "ATTACHED=" in r.stdout and "All assertions passed" in r.stdout, r.stdout[-6000:]
    assert DSECRET not in r.stdout and DSECRET not in r.stderr
    # detached: no session, no map
    assert guest(lab, "ls /sys/class/iscsi_session | wc -l").strip() == "0"
    assert guest(lab, "ls /sys/block | grep -c '^dm-' || true").strip() == "0"
