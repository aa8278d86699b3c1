"""gcp-storage-emulator with the one response header tensorstore needs (used by test_gcs.py).

    python tests/gcs_emulator.py start --port P --default-bucket bucket -q -M

A media download from real GCS carries x-goog-generation; tensorstore's gcs driver reads an
object's generation from it (OCDBT's manifest is versioned by generation) and fails with
"Malformed StorageGeneration" without it. The emulator omits it, so it is added here.
"""
import sys

from gcp_storage_emulator.handlers import objects


def _with_generation(download):
    def handler(request, response, storage, *args, **kwargs):
        try:
            obj = storage.get_file_obj(request.params["bucket_name"],
                                       request.params["object_id"])
            response["x-goog-generation"] = str(obj["generation"])
        except Exception:   # missing object: the original handler answers 404
            pass
        return download(request, response, storage, *args, **kwargs)
    return handler


if __name__ == "__main__":
    objects.download = _with_generation(objects.download)
    from gcp_storage_emulator import __main__ as emulator   # its routes bind the handler now
    emulator.main(sys.argv[1:])
