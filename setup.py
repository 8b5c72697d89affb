"""Only what pyproject.toml cannot say: copy the package's modules with their executable bit.

distutils copies modules into the build tree without their mode, so a wheel would ship
testbed/clientprogs/pyclient.py as 0644 while the checkout has 0755. The client image's
build context holds those files and its content hash covers each file's executable bit,
so a lost bit would make an installed wheel rebuild images the checkout already built.
"""

import os
import stat

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyKeepingExecutableBit(build_py):
    def build_module(self, module, module_file, package):
        outfile, copied = super().build_module(module, module_file, package)
        executable = os.stat(module_file).st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        if executable:
            os.chmod(outfile, os.stat(outfile).st_mode | executable)
        return outfile, copied


setup(cmdclass={"build_py": BuildPyKeepingExecutableBit})
