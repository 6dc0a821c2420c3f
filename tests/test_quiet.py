import logging

from reelgen.quiet import silence_known_import_noise


def test_known_noise_is_dropped_and_other_warnings_pass(caplog):
    silence_known_import_noise()
    silence_known_import_noise()  # idempotent: one filter per logger
    assert len(logging.getLogger("torchao").filters) == 1
    with caplog.at_level(logging.WARNING):
        logging.getLogger("torchao").warning("Failed to load /x/_C_mxfp8.so: Could not load this library")
        logging.getLogger("torch.utils._pytree").warning(
            "<enum 'K'> is an Enum subclass and is now natively supported by torch.compile")
        logging.getLogger("torchao").warning("int8 kernel unavailable")
    assert [r.getMessage() for r in caplog.records] == ["int8 kernel unavailable"]
