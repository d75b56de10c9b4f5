"""What calicoctl does to Calico's v3 resources: reading resource files (`documents`), the verbs
create, apply, replace, delete, patch and label over every kind (`verbs`), and what deleting an IP
pool or a node takes with it (`removal`). Every kind goes through the same code, driven by its
description in `model.kinds`."""
