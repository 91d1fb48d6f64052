"""The messages of Caffe's ``caffe.proto`` (package ``caffe``, proto2) in a compact notation.

One line per item, nesting by two spaces of indent::

    message NAME
      NUMBER LABEL TYPE NAME [default=VALUE] [packed=true]
      enum NAME VALUE=NUMBER ...

Field numbers, types, labels and defaults are those Caffe's files are written with; the
builder in ``caffe_pb2`` turns this into a ``FileDescriptorProto`` at import time.
"""

SCHEMA = """\
message BlobShape
  1 repeated int64 dim packed=true
message BlobProto
  7 optional BlobShape shape
  5 repeated float data packed=true
  6 repeated float diff packed=true
  8 repeated double double_data packed=true
  9 repeated double double_diff packed=true
  1 optional int32 num default=0
  2 optional int32 channels default=0
  3 optional int32 height default=0
  4 optional int32 width default=0
message BlobProtoVector
  1 repeated BlobProto blobs
message Datum
  1 optional int32 channels
  2 optional int32 height
  3 optional int32 width
  4 optional bytes data
  5 optional int32 label
  6 repeated float float_data
  7 optional bool encoded default=false
message FillerParameter
  1 optional string type default="constant"
  2 optional float value default=0
  3 optional float min default=0
  4 optional float max default=1
  5 optional float mean default=0
  6 optional float std default=1
  7 optional int32 sparse default=-1
  enum VarianceNorm FAN_IN=0 FAN_OUT=1 AVERAGE=2
  8 optional VarianceNorm variance_norm default=FAN_IN
message NetParameter
  1 optional string name
  3 repeated string input
  8 repeated BlobShape input_shape
  4 repeated int32 input_dim
  5 optional bool force_backward default=false
  6 optional NetState state
  7 optional bool debug_info default=false
  100 repeated LayerParameter layer
  2 repeated V1LayerParameter layers
message SolverParameter
  24 optional string net
  25 optional NetParameter net_param
  1 optional string train_net
  2 repeated string test_net
  21 optional NetParameter train_net_param
  22 repeated NetParameter test_net_param
  26 optional NetState train_state
  27 repeated NetState test_state
  3 repeated int32 test_iter
  4 optional int32 test_interval default=0
  19 optional bool test_compute_loss default=false
  32 optional bool test_initialization default=true
  5 optional float base_lr
  6 optional int32 display
  33 optional int32 average_loss default=1
  7 optional int32 max_iter
  36 optional int32 iter_size default=1
  8 optional string lr_policy
  9 optional float gamma
  10 optional float power
  11 optional float momentum
  12 optional float weight_decay
  29 optional string regularization_type default="L2"
  13 optional int32 stepsize
  34 repeated int32 stepvalue
  35 optional float clip_gradients default=-1
  14 optional int32 snapshot default=0
  15 optional string snapshot_prefix
  16 optional bool snapshot_diff default=false
  enum SnapshotFormat HDF5=0 BINARYPROTO=1
  37 optional SnapshotFormat snapshot_format default=BINARYPROTO
  enum SolverMode CPU=0 GPU=1
  17 optional SolverMode solver_mode default=GPU
  18 optional int32 device_id default=0
  20 optional int64 random_seed default=-1
  40 optional string type default="SGD"
  31 optional float delta default=1e-8
  39 optional float momentum2 default=0.999
  38 optional float rms_decay default=0.99
  23 optional bool debug_info default=false
  28 optional bool snapshot_after_train default=true
  enum SolverType SGD=0 NESTEROV=1 ADAGRAD=2 RMSPROP=3 ADADELTA=4 ADAM=5
  30 optional SolverType solver_type default=SGD
  41 optional bool layer_wise_reduce default=true
  42 repeated string weights
message SolverState
  1 optional int32 iter
  2 optional string learned_net
  3 repeated BlobProto history
  4 optional int32 current_step default=0
enum Phase TRAIN=0 TEST=1
message NetState
  1 optional Phase phase default=TEST
  2 optional int32 level default=0
  3 repeated string stage
message NetStateRule
  1 optional Phase phase
  2 optional int32 min_level
  3 optional int32 max_level
  4 repeated string stage
  5 repeated string not_stage
message ParamSpec
  1 optional string name
  2 optional DimCheckMode share_mode
  enum DimCheckMode STRICT=0 PERMISSIVE=1
  3 optional float lr_mult default=1.0
  4 optional float decay_mult default=1.0
message LayerParameter
  1 optional string name
  2 optional string type
  3 repeated string bottom
  4 repeated string top
  10 optional Phase phase
  5 repeated float loss_weight
  6 repeated ParamSpec param
  7 repeated BlobProto blobs
  11 repeated bool propagate_down
  8 repeated NetStateRule include
  9 repeated NetStateRule exclude
  100 optional TransformationParameter transform_param
  101 optional LossParameter loss_param
  102 optional AccuracyParameter accuracy_param
  103 optional ArgMaxParameter argmax_param
  139 optional BatchNormParameter batch_norm_param
  141 optional BiasParameter bias_param
  148 optional ClipParameter clip_param
  104 optional ConcatParameter concat_param
  105 optional ContrastiveLossParameter contrastive_loss_param
  106 optional ConvolutionParameter convolution_param
  144 optional CropParameter crop_param
  107 optional DataParameter data_param
  108 optional DropoutParameter dropout_param
  109 optional DummyDataParameter dummy_data_param
  110 optional EltwiseParameter eltwise_param
  140 optional ELUParameter elu_param
  137 optional EmbedParameter embed_param
  111 optional ExpParameter exp_param
  135 optional FlattenParameter flatten_param
  112 optional HDF5DataParameter hdf5_data_param
  113 optional HDF5OutputParameter hdf5_output_param
  114 optional HingeLossParameter hinge_loss_param
  115 optional ImageDataParameter image_data_param
  116 optional InfogainLossParameter infogain_loss_param
  117 optional InnerProductParameter inner_product_param
  143 optional InputParameter input_param
  134 optional LogParameter log_param
  118 optional LRNParameter lrn_param
  119 optional MemoryDataParameter memory_data_param
  120 optional MVNParameter mvn_param
  145 optional ParameterParameter parameter_param
  121 optional PoolingParameter pooling_param
  122 optional PowerParameter power_param
  131 optional PReLUParameter prelu_param
  130 optional PythonParameter python_param
  146 optional RecurrentParameter recurrent_param
  136 optional ReductionParameter reduction_param
  123 optional ReLUParameter relu_param
  133 optional ReshapeParameter reshape_param
  142 optional ScaleParameter scale_param
  124 optional SigmoidParameter sigmoid_param
  125 optional SoftmaxParameter softmax_param
  132 optional SPPParameter spp_param
  126 optional SliceParameter slice_param
  147 optional SwishParameter swish_param
  127 optional TanHParameter tanh_param
  128 optional ThresholdParameter threshold_param
  138 optional TileParameter tile_param
  129 optional WindowDataParameter window_data_param
message TransformationParameter
  1 optional float scale default=1
  2 optional bool mirror default=false
  3 optional uint32 crop_size default=0
  4 optional string mean_file
  5 repeated float mean_value
  6 optional bool force_color default=false
  7 optional bool force_gray default=false
message LossParameter
  1 optional int32 ignore_label
  enum NormalizationMode FULL=0 VALID=1 BATCH_SIZE=2 NONE=3
  3 optional NormalizationMode normalization default=VALID
  2 optional bool normalize
message AccuracyParameter
  1 optional uint32 top_k default=1
  2 optional int32 axis default=1
  3 optional int32 ignore_label
message ArgMaxParameter
  1 optional bool out_max_val default=false
  2 optional uint32 top_k default=1
  3 optional int32 axis
message ClipParameter
  1 required float min
  2 required float max
message ConcatParameter
  2 optional int32 axis default=1
  1 optional uint32 concat_dim default=1
message BatchNormParameter
  1 optional bool use_global_stats
  2 optional float moving_average_fraction default=999
  3 optional float eps default=1e-5
message BiasParameter
  1 optional int32 axis default=1
  2 optional int32 num_axes default=1
  3 optional FillerParameter filler
message ContrastiveLossParameter
  1 optional float margin default=1.0
  2 optional bool legacy_version default=false
message ConvolutionParameter
  1 optional uint32 num_output
  2 optional bool bias_term default=true
  3 repeated uint32 pad
  4 repeated uint32 kernel_size
  6 repeated uint32 stride
  18 repeated uint32 dilation
  9 optional uint32 pad_h default=0
  10 optional uint32 pad_w default=0
  11 optional uint32 kernel_h
  12 optional uint32 kernel_w
  13 optional uint32 stride_h
  14 optional uint32 stride_w
  5 optional uint32 group default=1
  7 optional FillerParameter weight_filler
  8 optional FillerParameter bias_filler
  enum Engine DEFAULT=0 CAFFE=1 CUDNN=2
  15 optional Engine engine default=DEFAULT
  16 optional int32 axis default=1
  17 optional bool force_nd_im2col default=false
message CropParameter
  1 optional int32 axis default=2
  2 repeated uint32 offset
message DataParameter
  enum DB LEVELDB=0 LMDB=1
  1 optional string source
  4 optional uint32 batch_size
  7 optional uint32 rand_skip default=0
  8 optional DB backend default=LEVELDB
  2 optional float scale default=1
  3 optional string mean_file
  5 optional uint32 crop_size default=0
  6 optional bool mirror default=false
  9 optional bool force_encoded_color default=false
  10 optional uint32 prefetch default=4
message DropoutParameter
  1 optional float dropout_ratio default=0.5
message DummyDataParameter
  1 repeated FillerParameter data_filler
  6 repeated BlobShape shape
  2 repeated uint32 num
  3 repeated uint32 channels
  4 repeated uint32 height
  5 repeated uint32 width
message EltwiseParameter
  enum EltwiseOp PROD=0 SUM=1 MAX=2
  1 optional EltwiseOp operation default=SUM
  2 repeated float coeff
  3 optional bool stable_prod_grad default=true
message ELUParameter
  1 optional float alpha default=1
message EmbedParameter
  1 optional uint32 num_output
  2 optional uint32 input_dim
  3 optional bool bias_term default=true
  4 optional FillerParameter weight_filler
  5 optional FillerParameter bias_filler
message ExpParameter
  1 optional float base default=-1.0
  2 optional float scale default=1.0
  3 optional float shift default=0.0
message FlattenParameter
  1 optional int32 axis default=1
  2 optional int32 end_axis default=-1
message HDF5DataParameter
  1 optional string source
  2 optional uint32 batch_size
  3 optional bool shuffle default=false
message HDF5OutputParameter
  1 optional string file_name
message HingeLossParameter
  enum Norm L1=1 L2=2
  1 optional Norm norm default=L1
message ImageDataParameter
  1 optional string source
  4 optional uint32 batch_size default=1
  7 optional uint32 rand_skip default=0
  8 optional bool shuffle default=false
  9 optional uint32 new_height default=0
  10 optional uint32 new_width default=0
  11 optional bool is_color default=true
  2 optional float scale default=1
  3 optional string mean_file
  5 optional uint32 crop_size default=0
  6 optional bool mirror default=false
  12 optional string root_folder default=""
message InfogainLossParameter
  1 optional string source
  2 optional int32 axis default=1
message InnerProductParameter
  1 optional uint32 num_output
  2 optional bool bias_term default=true
  3 optional FillerParameter weight_filler
  4 optional FillerParameter bias_filler
  5 optional int32 axis default=1
  6 optional bool transpose default=false
message InputParameter
  1 repeated BlobShape shape
message LogParameter
  1 optional float base default=-1.0
  2 optional float scale default=1.0
  3 optional float shift default=0.0
message LRNParameter
  1 optional uint32 local_size default=5
  2 optional float alpha default=1.0
  3 optional float beta default=0.75
  enum NormRegion ACROSS_CHANNELS=0 WITHIN_CHANNEL=1
  4 optional NormRegion norm_region default=ACROSS_CHANNELS
  5 optional float k default=1.0
  enum Engine DEFAULT=0 CAFFE=1 CUDNN=2
  6 optional Engine engine default=DEFAULT
message MemoryDataParameter
  1 optional uint32 batch_size
  2 optional uint32 channels
  3 optional uint32 height
  4 optional uint32 width
message MVNParameter
  1 optional bool normalize_variance default=true
  2 optional bool across_channels default=false
  3 optional float eps default=1e-9
message ParameterParameter
  1 optional BlobShape shape
message PoolingParameter
  enum PoolMethod MAX=0 AVE=1 STOCHASTIC=2
  1 optional PoolMethod pool default=MAX
  4 optional uint32 pad default=0
  9 optional uint32 pad_h default=0
  10 optional uint32 pad_w default=0
  2 optional uint32 kernel_size
  5 optional uint32 kernel_h
  6 optional uint32 kernel_w
  3 optional uint32 stride default=1
  7 optional uint32 stride_h
  8 optional uint32 stride_w
  enum Engine DEFAULT=0 CAFFE=1 CUDNN=2
  11 optional Engine engine default=DEFAULT
  12 optional bool global_pooling default=false
  enum RoundMode CEIL=0 FLOOR=1
  13 optional RoundMode round_mode default=CEIL
message PowerParameter
  1 optional float power default=1.0
  2 optional float scale default=1.0
  3 optional float shift default=0.0
message PythonParameter
  1 optional string module
  2 optional string layer
  3 optional string param_str default=""
  4 optional bool share_in_parallel default=false
message RecurrentParameter
  1 optional uint32 num_output default=0
  2 optional FillerParameter weight_filler
  3 optional FillerParameter bias_filler
  4 optional bool debug_info default=false
  5 optional bool expose_hidden default=false
message ReductionParameter
  enum ReductionOp SUM=1 ASUM=2 SUMSQ=3 MEAN=4
  1 optional ReductionOp operation default=SUM
  2 optional int32 axis default=0
  3 optional float coeff default=1.0
message ReLUParameter
  1 optional float negative_slope default=0
  enum Engine DEFAULT=0 CAFFE=1 CUDNN=2
  2 optional Engine engine default=DEFAULT
message ReshapeParameter
  1 optional BlobShape shape
  2 optional int32 axis default=0
  3 optional int32 num_axes default=-1
message ScaleParameter
  1 optional int32 axis default=1
  2 optional int32 num_axes default=1
  3 optional FillerParameter filler
  4 optional bool bias_term default=false
  5 optional FillerParameter bias_filler
message SigmoidParameter
  enum Engine DEFAULT=0 CAFFE=1 CUDNN=2
  1 optional Engine engine default=DEFAULT
message SliceParameter
  3 optional int32 axis default=1
  2 repeated uint32 slice_point
  1 optional uint32 slice_dim default=1
message SoftmaxParameter
  enum Engine DEFAULT=0 CAFFE=1 CUDNN=2
  1 optional Engine engine default=DEFAULT
  2 optional int32 axis default=1
message SwishParameter
  1 optional float beta default=1
message TanHParameter
  enum Engine DEFAULT=0 CAFFE=1 CUDNN=2
  1 optional Engine engine default=DEFAULT
message TileParameter
  1 optional int32 axis default=1
  2 optional int32 tiles
message ThresholdParameter
  1 optional float threshold default=0
message WindowDataParameter
  1 optional string source
  2 optional float scale default=1
  3 optional string mean_file
  4 optional uint32 batch_size
  5 optional uint32 crop_size default=0
  6 optional bool mirror default=false
  7 optional float fg_threshold default=0.5
  8 optional float bg_threshold default=0.5
  9 optional float fg_fraction default=0.25
  10 optional uint32 context_pad default=0
  11 optional string crop_mode default="warp"
  12 optional bool cache_images default=false
  13 optional string root_folder default=""
message SPPParameter
  enum PoolMethod MAX=0 AVE=1 STOCHASTIC=2
  1 optional uint32 pyramid_height
  2 optional PoolMethod pool default=MAX
  enum Engine DEFAULT=0 CAFFE=1 CUDNN=2
  6 optional Engine engine default=DEFAULT
message V1LayerParameter
  2 repeated string bottom
  3 repeated string top
  4 optional string name
  32 repeated NetStateRule include
  33 repeated NetStateRule exclude
  enum LayerType NONE=0 ABSVAL=35 ACCURACY=1 ARGMAX=30 BNLL=2 CONCAT=3 CONTRASTIVE_LOSS=37 CONVOLUTION=4 DATA=5 DECONVOLUTION=39 DROPOUT=6 DUMMY_DATA=32 EUCLIDEAN_LOSS=7 ELTWISE=25 EXP=38 FLATTEN=8 HDF5_DATA=9 HDF5_OUTPUT=10 HINGE_LOSS=28 IM2COL=11 IMAGE_DATA=12 INFOGAIN_LOSS=13 INNER_PRODUCT=14 LRN=15 MEMORY_DATA=29 MULTINOMIAL_LOGISTIC_LOSS=16 MVN=34 POOLING=17 POWER=26 RELU=18 SIGMOID=19 SIGMOID_CROSS_ENTROPY_LOSS=27 SILENCE=36 SOFTMAX=20 SOFTMAX_LOSS=21 SPLIT=22 SLICE=33 TANH=23 WINDOW_DATA=24 THRESHOLD=31
  5 optional LayerType type
  6 repeated BlobProto blobs
  1001 repeated string param
  1002 repeated DimCheckMode blob_share_mode
  enum DimCheckMode STRICT=0 PERMISSIVE=1
  7 repeated float blobs_lr
  8 repeated float weight_decay
  35 repeated float loss_weight
  27 optional AccuracyParameter accuracy_param
  23 optional ArgMaxParameter argmax_param
  9 optional ConcatParameter concat_param
  40 optional ContrastiveLossParameter contrastive_loss_param
  10 optional ConvolutionParameter convolution_param
  11 optional DataParameter data_param
  12 optional DropoutParameter dropout_param
  26 optional DummyDataParameter dummy_data_param
  24 optional EltwiseParameter eltwise_param
  41 optional ExpParameter exp_param
  13 optional HDF5DataParameter hdf5_data_param
  14 optional HDF5OutputParameter hdf5_output_param
  29 optional HingeLossParameter hinge_loss_param
  15 optional ImageDataParameter image_data_param
  16 optional InfogainLossParameter infogain_loss_param
  17 optional InnerProductParameter inner_product_param
  18 optional LRNParameter lrn_param
  22 optional MemoryDataParameter memory_data_param
  34 optional MVNParameter mvn_param
  19 optional PoolingParameter pooling_param
  21 optional PowerParameter power_param
  30 optional ReLUParameter relu_param
  38 optional SigmoidParameter sigmoid_param
  39 optional SoftmaxParameter softmax_param
  31 optional SliceParameter slice_param
  37 optional TanHParameter tanh_param
  25 optional ThresholdParameter threshold_param
  20 optional WindowDataParameter window_data_param
  36 optional TransformationParameter transform_param
  42 optional LossParameter loss_param
  1 optional V0LayerParameter layer
message V0LayerParameter
  1 optional string name
  2 optional string type
  3 optional uint32 num_output
  4 optional bool biasterm default=true
  5 optional FillerParameter weight_filler
  6 optional FillerParameter bias_filler
  7 optional uint32 pad default=0
  8 optional uint32 kernelsize
  9 optional uint32 group default=1
  10 optional uint32 stride default=1
  enum PoolMethod MAX=0 AVE=1 STOCHASTIC=2
  11 optional PoolMethod pool default=MAX
  12 optional float dropout_ratio default=0.5
  13 optional uint32 local_size default=5
  14 optional float alpha default=1.0
  15 optional float beta default=0.75
  22 optional float k default=1.0
  16 optional string source
  17 optional float scale default=1
  18 optional string meanfile
  19 optional uint32 batchsize
  20 optional uint32 cropsize default=0
  21 optional bool mirror default=false
  50 repeated BlobProto blobs
  51 repeated float blobs_lr
  52 repeated float weight_decay
  53 optional uint32 rand_skip default=0
  54 optional float det_fg_threshold default=0.5
  55 optional float det_bg_threshold default=0.5
  56 optional float det_fg_fraction default=0.25
  58 optional uint32 det_context_pad default=0
  59 optional string det_crop_mode default="warp"
  60 optional int32 new_num default=0
  61 optional int32 new_channels default=0
  62 optional int32 new_height default=0
  63 optional int32 new_width default=0
  64 optional bool shuffle_images default=false
  65 optional uint32 concat_dim default=1
  1001 optional HDF5OutputParameter hdf5_output_param
message PReLUParameter
  1 optional FillerParameter filler
  2 optional bool channel_shared default=false
"""
