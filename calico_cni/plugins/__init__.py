"""The CNI plugins' verbs (`calico`, `calico_ipam`), the per-verb dispatch both executables and the
node daemon use (`dispatch`), and the table that turns lower floors' errors into CNI codes."""
