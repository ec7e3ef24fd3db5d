"""The `qemu` provider: VMs on the control plane's own machine (a self-hoster's one large
machine, and our VM tests). `command` builds qemu's command line (pure; the VM test
harness uses it too), `vmdir` decides what a VM's directory says (pure: ids, labels, the
pid check, the accelerator), `driver` carries it out with files and processes."""
