import doctest

from absl.testing import parameterized

from keras_transfer.datasets import digits
from keras_transfer.datasets import fashion_mnist
from keras_transfer.datasets import mnist
from keras_transfer.datasets import resize
from keras_transfer.datasets import rotten_tomatoes
from keras_transfer.datasets import tf_data
from tests.testing import TestCase


class DocstringExamplesTest(TestCase):
    @parameterized.named_parameters(
        ("digits", digits),
        ("fashion_mnist", fashion_mnist),
        ("mnist", mnist),
        ("resize", resize),
        ("rotten_tomatoes", rotten_tomatoes),
        ("tf_data", tf_data),
    )
    def test_examples_run(self, module):
        result = doctest.testmod(module, verbose=False)
        self.assertGreater(result.attempted, 0)
        self.assertEqual(result.failed, 0)
