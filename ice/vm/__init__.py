"""The Vagrant VM's host side: the local Debian 12 box (:mod:`ice.vm.box`), the host's route to the package
registries the box copies (:mod:`ice.vm.route`), whether QEMU can use KVM here (:mod:`ice.vm.accel`) and the libvirt
daemon the VM needs (:mod:`ice.vm.libvirtd`).

``icelab vm`` (:mod:`ice.cli.vm`) drives them; nothing else in icelab imports this package.
"""
