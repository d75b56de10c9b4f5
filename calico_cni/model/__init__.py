"""The pure model: Calico's etcd key layout (`keys`), its records as typed objects that keep every
JSON field they do not model (`records`), and the label-selector language (`selector`). Standard
library only; no I/O."""
