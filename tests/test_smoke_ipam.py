from tests.conftest import cni_env, run_plugin
from tests.pools import create_pool


def test_add_del(store, ipam_conf):
    create_pool(store, "p1", "198.18.0.0/24")
    conf = ipam_conf()
    r = run_plugin("calico-ipam", "ADD", conf, cni_env())
    assert r.rc == 0, r.stdout + r.stderr
    print(r.out)
    r2 = run_plugin("calico-ipam", "DEL", conf, cni_env())
    assert r2.rc == 0, r2.stdout + r2.stderr
