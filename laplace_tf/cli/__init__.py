"""The ``laplace-tf`` command (`cli.command`), its data readers (`cli.data_files`) and the demo (`cli.demo`)."""
